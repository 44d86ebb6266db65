// The [capture] section of the config file (docs/config.md): listen addresses, TLS, limits,
// the allow list. Read at start and again on SIGHUP (all but the listen addresses).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "capture/server.h"
#include "core/result.h"
#include "core/text.h"

namespace mailvault::capture {

// Defaults for a listener started from the shell with no config file: loopback only.
CaptureConfig DefaultCaptureConfig();

// Applies the [capture] section of the file at path to *config. Unknown keys are errors that
// name the line.
Status ApplyCaptureConfigFile(const std::string& path, CaptureConfig* config);

// "90s", "5m", "2h", "1d", or a bare number of seconds.
using mailvault::ParseDuration;  // core/text.h

}  // namespace mailvault::capture
