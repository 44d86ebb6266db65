// Host names as the network code checks them.
#pragma once

#include <string>

namespace mailvault {

// A numeric loopback address (127.0.0.0/8, ::1, with or without brackets) or "localhost": a
// name like 127.x.example could resolve anywhere. Plain-text protocols (IMAP without TLS, S3 over
// http) are allowed only to such a host: passwords and signatures would cross the network in clear.
bool IsLoopbackHost(const std::string& host);

}  // namespace mailvault
