// The API speaks the control plane's vocabulary (users, roles, tokens, tags, export records,
// the audit trail and the state store, control/) throughout, so its code names them unqualified.
#pragma once

#include "control/audit.h"
#include "control/jobs.h"
#include "control/records.h"
#include "control/state.h"

namespace mailvault::api {
using namespace mailvault::control;  // NOLINT(google-build-using-namespace): see above
}  // namespace mailvault::api
