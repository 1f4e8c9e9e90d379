// stdio_redirect: points this process's stdout or stderr (fd 1 or 2) at another open file, the way a daemon
// moves what it writes outside its logger (Node's fatal messages, an abort's text, a crash trace) to the log
// file it has just reopened after logrotate moved the old one away. Node has no dup2, so the addon does it.
// No N-API in here: addon.cc wraps it for the JS thread.
#pragma once

// JS thread (called from addon.cc's RedirectStdio wrapper; Node's own writes to fd 1 and 2 happen on the JS
// thread too, so none is in the middle of one). Makes `target` (1 or 2 only) a duplicate of `fd`, closing what
// `target` referred to before: dup2(fd, target). Throws SysError: EINVAL for another target or a negative fd,
// EBADF when `fd` is not open, or what dup2 fails with.
void RedirectStdio(int fd, int target);
