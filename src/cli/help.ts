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
  remap    remap the block holding a sector to the spare (copying its data)
  unremap  move a remapped block's data back to main
  verify   show where a sector maps and whether it reads
  table    show the remap table
  message  send a dmsetup-message style command (remap N, unremap N, verify N, table, status, ping)

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
  --spare-offset <n>   the spare region starts n bytes into the spare (multiple of 4096, default 0)
  --spare-size <n>     the spare region is n bytes long (default: the rest of the spare)
  --force-format       format the spare region even if it holds another main's remap table
                       (its remaps are lost); a fresh spare is formatted without it
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

Prints the dm-remap v2.0 status line, then the device's configuration, I/O counters, I/O errors and
the kernel features in use:
  0 <sectors> remap v2.0 <remapped>/<slots> <lost>/<slots> <used>/<slots> health=<h>
    errors=W<w>:R<r> auto_remaps=<a> manual_remaps=<m> scan=<p>%
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
  remap: `Usage: dmremap-ublk remap <device> <sector> [--json]

Remaps the block holding 512-byte <sector> to a free spare slot, online: I/O to that block waits while
its data is copied from main to the slot; the remap is on the spare (flushed) before it is used. If
main cannot read the block, it is remapped as lost: reads of it fail with EIO until it is written.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  --json       print {"sector","block","slot","state","readErrno"}
  -h, --help   show this help
`,
  unremap: `Usage: dmremap-ublk unremap <device> <sector> [--json]

Moves the data of the remapped block holding <sector> back to main (after the disk was repaired) and
frees its spare slot. A lost block is refused: its data is gone.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  --json       print {"sector","block","slot"}
  -h, --help   show this help
`,
  verify: `Usage: dmremap-ublk verify <device> <sector> [--json]

Shows where the block holding <sector> lives (main, or a spare slot; mapped, lost or being moved) and
whether it reads (with the errno when it does not).
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  --json       print the result object
  -h, --help   show this help
`,
  table: `Usage: dmremap-ublk table <device> [--offset N] [--limit N] [--json]

Shows the remap table sorted by block: block, first sector, spare slot, state (mapped or lost),
origin (manual or auto), time and error count. Big tables come in pages.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  --offset <n>  skip the first n entries (default 0)
  --limit <n>   show at most n entries, 1-100000 (default 1000)
  --json        print {"total","offset","entries":[...]}
  -h, --help    show this help
`,
  message: `Usage: dmremap-ublk message <device> <words...>

Sends a dm-remap style message and prints the reply, like dmsetup message. Messages:
  remap <sector>           unremap <sector>           verify <sector>
  table [offset [limit]]   status (the status line)   ping
An unknown message is an error.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  -h, --help   show this help
`,
} as const;
