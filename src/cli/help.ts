// Help texts, one per command.
export const HELP = {
  main: `Usage: dmremap-ublk <command> [options]

A block device (/dev/ublkbN) that serves a failing disk (main) and hides its bad sectors by remapping
them to a spare device.

Commands:
  add      create a device over a main and a spare device
  list     list the devices
  status   show one device's status and counters
  del      stop and remove a device

Options:
  -h, --help     show help (also: dmremap-ublk <command> --help)
  -V, --version  print the version

Exit codes: 0 success, 1 run-time failure, 2 bad usage.
`,
  add: `Usage: dmremap-ublk add --main <path> --spare <path> [options]

Creates a ublk block device over <main>, with <spare> as the remap target, and prints its path
(/dev/ublkbN) once it is live. Without --foreground the daemon detaches and the command returns.

Options:
  --main <path>        the device to serve (block device or file), opened exclusively
  --spare <path>       the spare device, opened exclusively; must differ from main
  --name <name>        a name for the device (letters, digits, . _ -; starts with a letter)
  --queues <n>         ublk queues, 1-16 (default: CPU count, at most 4)
  --depth <n>          queue depth, 1-4096 (default 128)
  --block-size <n>     logical block size, 512 or 4096 (default: 512, or main's if larger)
  --max-io <KiB>       largest single I/O in KiB, 4-1024, multiple of 4 (default 512)
  --buffers <mode>     auto (default): zero copy where the kernel has UBLK_F_AUTO_BUF_REG (6.16+),
                       else copy; copy: always copy; zero-copy: refuse to run without it
  --foreground         stay in the foreground; stop with Ctrl-C or SIGTERM
  --log-file <path>    append JSON logs here (default: stderr in the foreground,
                       <run dir>/daemon.log when detached)
  --json               print {"devId","blockPath","name","pid"} instead of the path
  -h, --help           show this help
`,
  list: `Usage: dmremap-ublk list [--json]

Lists the devices: path, name, main, spare, daemon pid and state: running, unresponsive (the
daemon does not answer), or orphaned (the daemon died; \`del\` removes the device).

Options:
  --json       print a JSON array
  -h, --help   show this help
`,
  status: `Usage: dmremap-ublk status <device> [--json]

Shows a device's configuration, I/O counters, I/O errors and the kernel features in use.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  --json       print the status object as JSON
  -h, --help   show this help
`,
  del: `Usage: dmremap-ublk del <device> [--json]

Stops a device's daemon and waits until the daemon has exited and /dev/ublkbN is gone.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  --json       print {"devId","blockPath","name","removed":true}
  -h, --help   show this help
`,
} as const;
