// sd_notify: one datagram to the service manager's notification socket ($NOTIFY_SOCKET), the way systemd's
// Type=notify services report READY=1, STATUS=... and STOPPING=1. Node has no unix datagram sockets, so the
// addon sends it. No N-API in here: addon.cc wraps it for the JS thread.
#pragma once

#include <string>

// JS thread (called from addon.cc's SdNotify wrapper; it blocks for at most one non-blocking sendto).
// Sends `state` (newline-separated KEY=VALUE lines) as one datagram to the socket NOTIFY_SOCKET names: an
// absolute path, or an abstract name written with a leading '@'. Returns false, sending nothing, when
// NOTIFY_SOCKET is unset or empty (not run by a service manager); throws SysError when the name is not
// usable (relative, too long) or socket/sendto fails.
bool SdNotify(const std::string& state);
