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
  restart  replace a device's daemon with a new one (the code installed now) without removing the device
  recover  bring back a device whose daemon died (it waits, quiesced) with a new daemon
  remap    remap the block holding a sector to the spare (copying its data)
  unremap  move a remapped block's data back to main
  verify   show where a sector maps and whether it reads
  table    show the remap table
  stats    error-handling statistics: errors, retries, recovered reads, auto remaps, pending blocks
  recheck  re-read lost blocks on main; those that read now go back to main
  scan     the background scan: status, start [--rate N], pause, resume, stop, --watch
  health   the disk's health: state, score, reasons, action, forecast (--history: day by day); reset
  watch    stream the device's events as they happen: remaps, pending blocks, error bursts, health
           changes, forecast alarms, scan progress, outages (--json: one JSON object per line)
  map      draw the surface map (regions by read latency, marked bad blocks) to an SVG or HTML file
  message  send a dmsetup-message style command (remap N, unremap N, verify N, table, status, stats,
           clear_stats, set_auto_remap 0|1, recheck [N...], scan [start [N]|pause|resume|stop], ping)
  config   show or change the error-handling defaults (auto_remap, error_threshold, read_retries,
           retry_backoff_ms, ...), the scan's (scan_rate_mib, ...), the health model's (health_watch_days,
           ...) and alert_command in /etc/dmremap-ublk/config.json
  exporter serve Prometheus metrics of every device on this host (--listen HOST:PORT)
  demo     show a device's life on a made-up failing disk (in the test VM where this host has no ublk)
  logs     logs reopen: make every daemon reopen its log file (after logrotate)
  enable   record a device so that it comes back after a reboot (up, systemd); disable forgets it
  up       bring up every recorded device that is not running; down stops them, keeping the records
  install-systemd  install the systemd units that bring recorded devices up at boot

Options:
  -h, --help     show help (also: dmremap-ublk <command> --help)
  -V, --version  print the version

Exit codes: 0 success, 1 run-time failure, 2 bad usage.
`,
  add: `Usage: dmremap-ublk add --main <path> --spare <path> [options]

Creates a ublk block device over <main>, with <spare> as the remap target, and prints its path
(/dev/ublkbN) once it is live. Without --foreground the daemon detaches and the command returns; it then
runs under a supervisor that recovers the device when the daemon dies (see the README, "When the daemon dies").

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
  --require-table      refuse a spare that holds no remap table yet (never format it); \`up\` starts
                       recorded devices so
  --table-uuid <uuid>  refuse a spare whose remap table is not this one (E_SPARE_OTHER_TABLE; implies
                       --require-table): \`up\` passes the table's UUID its record names
  --policy-given <list>  which error-handling flags (comma-separated names) were given: set by add
                       for the detached daemon it starts, kept for \`enable\` to record
  --persist            once the device is live, record it (needs --name; like \`enable <name>\`) so that
                       \`up\` and systemd bring it back after a reboot

Error handling (each overrides the config file; see dmremap-ublk config --help):
  --auto-remap <on|off>     remap blocks on I/O errors (default on)
  --error-threshold <n>     recovered read errors on a block before it is relocated, 1-65535 (default 1)
  --read-retries <n>        retries of a failed read before it fails, 0-16 (default 3)
  --retry-backoff-ms <n>    wait before the first retry in ms, doubling per retry, 0-10000 (default 10)
  --outage-regions <n>      failures in this many of main's 64 regions within the window suspect an
                            outage (main is probed), 1-64 (default 4)
  --write-outage-regions <n>  write failures in this many regions within the window, with no write to
                            main done since, make a write outage: main refuses writes; they are held,
                            redirected to the spare only when their hold ends, 2-64 (default 8)
  --outage-window-ms <n>    that window in ms, 10-60000 (default 2000)
  --outage-hold-ms <n>      requests held during an outage fail with their errno after this (writes held
                            in a write outage are redirected instead), 100-600000 (default 30000)
Each setting comes from the first of: the flag, the config file's entry for this device (by --name,
else by the absolute --main path), the config file's global value, the default. A config file that cannot be
read or is invalid makes add fail before anything is created.

Other options:
  --json               print {"devId","blockPath","name","pid"} instead of the path (with --persist
                       also "record" and "systemd")
  -h, --help           show this help
`,
  config: `Usage: dmremap-ublk config get [key] [--device <name>] [--json]
       dmremap-ublk config set <key> <value> [--device <name>] [--json]
       dmremap-ublk config unset <key> [--device <name>] [--json]

The error-handling and background-scan defaults, kept in /etc/dmremap-ublk/config.json (or
$DMREMAP_CONFIG). The error-handling keys apply to devices added afterwards; a running device keeps the
settings it was added with (but "dmremap-ublk message <device> set_auto_remap 0|1" switches its
auto-remap). The scan and health keys are read by a device's daemon when it starts (add, restart,
recover); alert_command when an alert is due.

Keys:
  auto_remap        remap blocks on I/O errors: 0|1|on|off|true|false (default on)
  error_threshold   recovered read errors on a block before it is relocated, 1-65535 (default 1)
  read_retries      retries of a failed read before it fails with EIO, 0-16 (default 3)
  retry_backoff_ms  wait before the first retry in ms, doubling per retry, 0-10000 (default 10)
  outage_regions    failures in this many of main's 64 regions within outage_window_ms suspect a
                    device-wide outage (main is then probed), 1-64 (default 4)
  write_outage_regions  write failures in this many regions within outage_window_ms, with no write
                    to main done since, make a write outage (main refuses writes: they are held,
                    redirected to the spare only when their hold ends), 2-64 (default 8)
  outage_window_ms  that window in ms, 10-60000 (default 2000)
  outage_hold_ms    requests held during an outage fail with their errno after this (writes held
                    in a write outage are redirected to the spare instead), 100-600000 (default 30000)
  scan_rate_mib     the background scan's rate while the device is idle, MiB/s, 1-1048576 (default 64)
  scan_min_rate_mib its rate while users do I/O (the floor), MiB/s, 1-1048576 (default 1)
  scan_interval_days  days from the end of a scan pass to the start of the next, 0-3650 (0: no
                    scheduled passes; default 30)
  slow_io_ms        a scan or user read slower than this is slow (read again block by block), ms,
                    1-600000 (default 500)
  slow_threshold    times a block is found slow before it is relocated with its data, 1-65535
                    (default 2)
  health_watch_days, health_recent_hours, health_slow_ios, health_lost_blocks,
  health_spare_degraded_percent, health_spare_critical_percent, health_forecast_days,
  health_forecast_min_blocks, health_critical_forecast_days, health_acceleration_factor,
  health_acceleration_min_blocks, health_cluster_distance_blocks, health_cluster_days,
  health_cluster_growth_blocks, health_outage_fail_seconds, health_half_life_days
                    the health model's thresholds (whole numbers; defaults and reasons in docs/HEALTH.md)
  alert_command     a command line run (by /bin/sh -c) when a device's health changes state or a
                    forecast alarm begins, with DMREMAP_DEVICE, DMREMAP_NAME, DMREMAP_STATE,
                    DMREMAP_PREVIOUS_STATE, DMREMAP_SCORE, DMREMAP_REASON and DMREMAP_ALARM (the
                    alarm's name, empty for a change of state) set; killed after 30 s;
                    at most once per 10 min for the same state (default none)
  control_group     global only (no --device): a group name or gid whose members may use the
                    read-only commands of every device's control socket (status, list, table,
                    stats, health, verify, scan status, map, watch); read when a daemon starts
                    (default none: root only). Shown by "config get control_group" only.

get     prints the effective settings, one "key = value" per line (the given key only, if any):
        the defaults, overridden by the file's global values, overridden by the file's entry for
        --device. With --json: {"autoRemap","errorThreshold","readRetries","retryBackoffMs",
        "outageRegions","writeOutageRegions","outageWindowMs","outageHoldMs","scanRateMib",
        "scanMinRateMib","scanIntervalDays","slowIoMs","slowThreshold","healthWatchDays",...,
        "alertCommand"} (alertCommand null when none).
set     stores a value, globally or for --device, and prints "key = value (was old)". The file is
        replaced atomically (created, with /etc/dmremap-ublk, if missing); other keys are kept.
unset   removes a value, globally or for --device, so the next level's value applies again.
A bad key, value or file is reported in one line and leaves the file as it was.

Options:
  --device <name>  a device's entry: the name given to add --name, or, for a device without a name,
                   the path given to add --main
  --json           print JSON: the settings (get), or {"key","device","value","previous","changed","file"}
  -h, --help       show this help

Examples:
  dmremap-ublk config set read_retries 5
  dmremap-ublk config set auto_remap off --device backup
  dmremap-ublk config get --device backup
  dmremap-ublk config set alert_command '/usr/local/bin/disk-alert --mail root'
`,
  list: `Usage: dmremap-ublk list [--json]

Lists the devices: path, name, stable name (LINK: /dev/dmremap/<name> when it points at the device),
main, spare, daemon pid and state: running, unresponsive (the
daemon does not answer), quiesced (the daemon is gone, the device waits for recover), orphaned
(the daemon died; \`del\` removes the device), or invalid (its registry file cannot be read, with why;
its main and spare stay taken; \`del <id>\` removes it).

Options:
  --json       print a JSON array
  -h, --help   show this help
`,
  status: `Usage: dmremap-ublk status <device> [--json]

Prints the dm-remap v2.0 status line, then the device's configuration, I/O counters, I/O errors and
the kernel features in use:
  0 <sectors> remap v2.0 <remapped>/<slots> <lost>/<slots> <used>/<slots> health=<h>
    errors=W<w>:R<r> auto_remaps=<a> manual_remaps=<m> scan=<p>%
<device> is /dev/ublkbN, /dev/dmremap/<name>, the device id (N or ublkbN), or the name given to add.

Options:
  --json       print the status object as JSON
  -h, --help   show this help
`,
  del: `Usage: dmremap-ublk del <device> [--force] [--json]

Stops a device's daemon and waits until the daemon has exited and /dev/ublkbN is gone. A quiesced
device (its daemon died; see recover) is stopped and deleted directly: I/O waiting on it fails, and
so is one whose registry file cannot be read (list: invalid; name it by its device id). /dev/dmremap/<name>
goes with the device. <device> is /dev/ublkbN, /dev/dmremap/<name>, the device id (N or ublkbN), or the name.
A device whose /dev/ublkbN (or a partition of it) is mounted, held by another block device (device-mapper,
md, LVM on top) or in use as swap is refused, nothing changed (E_DEVICE_IN_USE, exit 1, one line naming the
mount point or holders): unmount it first. --force deletes it all the same: its users lose their disk at
once, and the kernel (so the daemon, and del waiting for it: 60 s) finishes once it is unmounted.

Options:
  --force      delete the device even while it is in use (mounted, held, swap, a loop device on it, open exclusively)
  --json       print {"devId","blockPath","name","removed":true}
  -h, --help   show this help
`,
  restart: `Usage: dmremap-ublk restart <device> [--json]

Replaces the device's daemon with a new one running the code installed now, without removing the device:
the old daemon stops taking new requests, finishes what it holds, flushes and exits, leaving the device
quiesced (its users' I/O waits); a new daemon recovers it. A daemon run by add's supervisor is replaced by
the supervisor; one started with --foreground by this command (\`recover\`, detached). Returns once the
new daemon answers, and prints its pid. <device> is /dev/ublkbN, the device id (N or ublkbN), or the name.
Refused (nothing changed): a device created without ublk user recovery, which the kernel would stop when
its daemon leaves (E_NO_RECOVERY; kernels before 6.5 offer none).

Options:
  --json       print {"devId","blockPath","name","pid","previousPid","supervised","seconds"}
  -h, --help   show this help
`,
  recover: `Usage: dmremap-ublk recover <device> [--foreground] [--log-file <path>] [--json]

Takes over a quiesced device with a new daemon. When a daemon dies (kill -9, a crash) or detaches, the
kernel keeps /dev/ublkbN and holds its I/O (ublk user recovery, UBLK_F_USER_RECOVERY); requests the dead
daemon had taken are sent again to the new one. The new daemon runs with the parameters add saved in
/run/dmremap-ublk/<id>.json and the remap table on the spare.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.
Refused (nothing changed): a device whose daemon runs (E_DEVICE_LIVE), one that is not quiesced
(E_NOT_QUIESCED: gone, or created on a kernel without user recovery), an unknown one (E_NOT_FOUND), and
saved state that is missing, invalid or no longer matches main and spare (E_STATE). A device the dead
daemon's process still holds after 5 s (a backing I/O it started has not ended): E_PREDECESSOR_BUSY, exit
69; try again later.

Options:
  --foreground      run the daemon in this process (default: detached, like add)
  --log-file <path> the daemon's log (default: the log file add used)
  --json            print {"devId","blockPath","name","pid"}
  -h, --help        show this help
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
whether it reads (with the errno when it does not). A daemon reads main for one verify at a time
(a few more wait; the next is refused, E_BUSY: try again shortly), and not at all during an outage
of main (E_OUTAGE).
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  --json       print the result object
  -h, --help   show this help
`,
  table: `Usage: dmremap-ublk table <device> [--offset N] [--limit N] [--json]

Shows the remap table sorted by block: block, first sector, spare slot, state (mapped or lost),
origin (manual, auto, or scan: found by the background scan), time and error count. Big tables come in pages.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  --offset <n>  skip the first n entries (default 0)
  --limit <n>   show at most n entries, 1-100000 (default 1000)
  --json        print {"total","offset","entries":[...]}
  -h, --help    show this help
`,
  stats: `Usage: dmremap-ublk stats <device> [--json]

Shows how the device handles I/O errors: read and write errors, retries, reads recovered by a retry and
reads that failed every try, automatic remaps (and how many of them the background scan found, scanRemaps)
and relocations, pending blocks (unreadable, waiting for a write), lost blocks, spare I/O errors and
retired slots, errors passed through to the user, the auto-remap work queue, free slots and health.
Counters run since start or the last clear_stats; the error totals and remap counts are persisted on the
spare.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  --json       print the statistics object
  -h, --help   show this help
`,
  recheck: `Usage: dmremap-ublk recheck <device> [<sector>...] [--json]

Reads lost blocks again on main: those holding the given sectors (512-byte sectors), or every lost block.
A lost (pending) block still holds its last data on main, since nothing was written to it since; a block
that reads now goes back to main (its entry is removed and its spare slot freed, counted as recovered in
stats) with the care of an unremap: requests touching it wait while it moves. A block that still does
not read stays lost. Also run by the daemon for pending blocks when an outage of main ends.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  --json       print {"checked","recovered","unreadable","blocks":[{"sector","block","result","errno"}]}
  -h, --help   show this help
`,
  scan: `Usage: dmremap-ublk scan <device> [start [--rate N] [--wait] | pause | resume | stop] [--watch] [--json]

The background scan reads every block of the device in order, in 1 MiB chunks, to find bad and slow
sectors before a user reads them. It runs at up to scan_rate_mib MiB/s (default 64) while the device is
idle and drops toward scan_min_rate_mib (default 1) while users do I/O. A block that does not read is
handled as a failed user read is (retried; relocated with its data when a retry reads it; pending,
reads failing until written, when no try reads it). A read slower than slow_io_ms (default 500) is read
again block by block; a block slow slow_threshold times (default 2) is relocated with its data.
A user's read slower than slow_io_ms is read again the same way once users are idle, in every scan
state, and counts towards the same slow_threshold.
The scan's place is kept in the state directory: after a restart a running scan goes on, a paused one
stays paused. A finished pass starts again scan_interval_days (default 30; 0: never) after it ended.
Without an action: the scan's state (idle, running, paused, done), progress, position, rate, ETA,
errors and slow blocks found, start and finish times.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Actions:
  start      a new pass from the start of the device (refused while one runs or is paused)
  pause      pause the running pass (after its read in flight)
  resume     go on with a paused pass
  stop       abandon the pass (idle; the next start begins at 0)

Options:
  --rate <N>   with start: this pass's ceiling in MiB/s (0.01 to 1048576; default scan_rate_mib)
  --wait       with start: show the progress until the pass is done
  --watch      show the progress until the pass is done (a bar on a terminal, one line per change
               otherwise); Ctrl-C ends the display, not the scan
  --json       print the status object ({"state","progress","position","deviceBytes","rateBps",
               "startedAt","finishedAt","errorsFound","slowFound","etaSeconds","pass"}, times in ms
               since the epoch); with --watch or --wait, one object per line
  -h, --help   show this help
`,
  health: `Usage: dmremap-ublk health <device> [--history] [--json]
       dmremap-ublk health <device> reset [--json]

The health model's judgement of the disk behind the device (docs/HEALTH.md), from what the daemon saw:
new bad blocks (by origin), pending blocks, errors on main and on the spare, reads recovered by a retry,
slow scan reads, outages, the spare's use. Printed like zpool status:
   state  healthy, watch, degraded, critical or failed (the status line's health= field)
   score  0-100, within the state's band (healthy 90-100, watch 70-89, degraded 40-69, critical
          10-39, failed 0-9)
  reason  each signal behind the state, worst first, with the state it implies and its points
  action  what to do
forecast  when the spare runs out at the recent rate of new bad blocks (with a 95% range), and
          whether new bad blocks are accelerating
The history is kept per hour in the state directory (<pairId>.health), survives restarts and del +
add, and is not cleared by clear_stats. A history file that cannot be used is reported (the device
runs, the file is left as it is) until reset replaces it.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Actions:
  reset        start a new history from now (the old one is dropped; the thresholds stay)

Options:
  --history    also print the history day by day (UTC days with events)
  --json       print {"state","score","reasons":[{"signal","value","weight","state","sentence"}],
               "action","forecast":{"spareExhaustionSeconds","range","acceleration","ratePerDay"},
               "recordError","since","device","name"} and with --history "history":[{"day","counts",
               "spare"}]
  -h, --help   show this help
`,
  watch: `Usage: dmremap-ublk watch <device> [--json]

Streams the device's events as they happen, one line each, until Ctrl-C or SIGTERM (exit 0). If the
daemon goes away (del, stop, a crash) it says so on stderr and exits 1. Events:
  remap    a block remapped to the spare: block, sector, slot, origin (manual, auto or scan), and
           whether its data was lost (state lost: reads fail until it is written)
  pending  blocks became pending (unreadable, lost until written), or pending blocks were cleared
  burst    a burst of errors, as the log reports it: the first at once, then one per second of a burst
  health   the health state changed (previous, state, score, the worst reason)
  alarm    a forecast alarm without a change of state (new bad blocks accelerating, spare running out)
  scan     the background scan's state changed (running, paused, done, idle), or its progress while it
           runs (at most once every 5 s)
  outage   main stopped answering or refusing writes (begin), or answers again (end)
  missed   this watcher read too slowly and lost that many events just before this line
Only what happens from the start of the watch is shown. Several watches can run at once; none of them
slows the device.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  --json       print each event as the daemon sends it, one JSON object per line (NDJSON):
               {"type","at","device",...} with "at" in ms since the epoch; the fields of each type are
               in docs/DESIGN.md ("Events")
  -h, --help   show this help
`,
  map: `Usage: dmremap-ublk map <device> --out FILE.svg|FILE.html [--json]

Draws the device's surface as a grid of regions in reading order (left to right, then top to bottom; up
to 4096 regions, each at least 1 MiB), like Victoria's block grid. A cell's colour is the slowest read
of its region in the background scan's latest pass (running, or the last one done or stopped), in MHDD
and Victoria's steps: grey < 5, < 20 and < 50 ms, green < 150 ms, orange < 500 ms, red >= 500 ms, blue a
read error, white not read. A corner mark shows the region holds blocks of a kind, counted from the
remap table when the map is made: pending (magenta, top right: lost, reads fail until written),
relocated (cyan, bottom left: moved to the spare by the error policy or the scan, origin auto or scan)
and remapped (yellow, bottom right: served from the spare, any origin; relocated blocks are remapped
too). A header gives the device, its size, the time, the scan's state and the counts. The format comes
from the extension: .svg a picture, .html one self-contained page (no network) showing a cell's byte
range, reads per latency step and block counts when the pointer is over it. The file is replaced
atomically.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  --out <file>  the file to write, ending in .svg or .html (anything else is refused, nothing written)
  --json        without --out: print the map data ({"device","name","deviceBytes","blockSize",
                "regionBytes","generatedAt","scan","regions":[{"index","start","end","bins","remapped",
                "pending","relocated","worstBin"}]}); with --out: print {"out","format","regions"}
  -h, --help    show this help
`,
  message: `Usage: dmremap-ublk message <device> <words...>

Sends a dm-remap style message and prints the reply, like dmsetup message. Messages:
  remap <sector>           unremap <sector>           verify <sector>
  table [offset [limit]]   status (the status line)   stats (one key=value line)
  clear_stats              set_auto_remap 0|1         ping
  recheck [sector...]      scan [start [rate_mib] | pause | resume | stop]
A leading target sector, as dmsetup message passes it ("0 remap 1234"), is accepted when it is 0.
An unknown message is an error.
<device> is /dev/ublkbN, the device id (N or ublkbN), or the name given to add.

Options:
  -h, --help   show this help
`,
  exporter: `Usage: dmremap-ublk exporter [--listen HOST:PORT] [--json]

Serves Prometheus metrics of every dmremap-ublk device on this host at http://HOST:PORT/metrics (one
exporter per host, like node_exporter), asking each device's daemon over its control socket at every
scrape, all devices at once. A device whose daemon is gone or does not answer within 2 s is reported as
dmremap_up 0 and never holds up the scrape. Metric names, all with the dmremap_ prefix and the labels
device and name, are in the README ("Prometheus"). Runs in the foreground until SIGINT or SIGTERM; a
device going down (or coming back) is one line on stderr. Counters are the daemons' own: they start over
when a daemon restarts, and the error totals at clear_stats (Prometheus reads that as a reset).

Options:
  --listen HOST:PORT  where to listen (default 127.0.0.1:9730; [::1]:9730 for IPv6, :9730 for every
                      address, port 0 for any free one); an address that cannot be used is an error
  --json              print where it listens as {"listening","url","pid"}
  -h, --help          show this help
`,
  demo: `Usage: dmremap-ublk demo [--json]

Shows what dmremap-ublk does, step by step, printing each command and its output: it makes a failing
disk (a 32 MiB sparse file on a loop device under a device-mapper table with three error segments) and a
16 MiB spare, adds a device over them, writes 8 MiB of random data through it (the writes that fail on
the bad sectors are remapped to the spare), reads it back and compares the sha256, shows list, status,
table and health, runs a scan with watch beside it, draws the surface map, and then removes everything
it made (device, dm table, loop devices, files in a temporary directory), also after a failure or
Ctrl-C. Exit 0 only if the data read back was what was written and everything was removed.

Needs root, dmsetup and losetup. Where this host has no ublk, it runs inside the test VM instead
(test/vm/run.sh: a Debian kernel under QEMU; needs the VM's packages, see the README). Without root on a
host that has ublk (loaded, or a module modprobe can load), it says it needs root instead.

Options:
  --json       print no steps; at the end one JSON object: ok, the two sha256, each step's command,
               exit status, output and time (ms), the clean-up steps, and the error (null when ok)
  -h, --help   show this help
`,
  logs: `Usage: dmremap-ublk logs reopen [--json]

Sends SIGHUP to every running daemon: each reopens its log file (a new file where logrotate moved the old
one away) and has its supervisor do the same. One line per daemon; none running is not an error. The
logrotate snippet scripts/logrotate/dmremap-ublk runs this after a rotation.

Options:
  --json       print [{devId, name, pid, logFile, signalled}]
  -h, --help   show this help
`,
  enable: `Usage: dmremap-ublk enable <device> [--json]

Records a running (or quiesced) device so that it comes back after a reboot: its name, main and spare as
stable paths (a /dev/disk/by-id link where one points at the disk, else by-path, by-uuid, by-partuuid; a
file's own path; else the path given, with a warning), block size, queues, depth, max I/O, buffers mode,
spare region and error-handling settings, in /etc/dmremap-ublk/devices.d/<name>.json, and the identity of
each disk (\`up\` refuses a disk that is not the one recorded), and the UUID of the remap table the device's
daemon serves (\`up\` refuses a spare holding another table of the same main, E_SPARE_OTHER_TABLE: a copy of
the spare disk taken before the spare was last formatted). A UUID already recorded is kept unless the
running daemon serves another table (then replaced, and said so); a quiesced device (no daemon answers) has
it read from the spare, and said so; a spare path that now holds another table or none is warned about. Only
a device added with --name can be recorded. Where systemd runs and its units are installed
(install-systemd), also enables dmremap-ublk@<name>.service. <device> is /dev/ublkbN, /dev/dmremap/<name>,
the device id or the name.

Options:
  --json       print {"name","record","enabled":true,"systemd":{"unit","enabled","note"},"main","spare",
               "tableUuid","tableUuidFrom"}; tableUuidFrom is daemon, spare (read: no daemon answered),
               record (kept) or null (none recorded)
  -h, --help   show this help
`,
  disable: `Usage: dmremap-ublk disable <name|device> [--json]

Removes a device's record (and, where systemd runs, disables its unit): \`up\` no longer brings it back.
The device keeps running.

Options:
  --json       print {"name","record","disabled":true,"systemd":{...}}
  -h, --help   show this help
`,
  up: `Usage: dmremap-ublk up [name...] [--json]
       dmremap-ublk up --foreground <name>

Brings up every recorded device (or those named) that is not running, one line each: "already up" for a
running one, "recovered" for a quiesced one (its daemon died; it is taken over, not added again), "up" for
one added from its record. A device whose main or spare is missing, or is not the disk recorded, is reported
and skipped; the others still come up. A record that cannot be read is reported by file name with the
reason. A device of the record's name on other disks is reported as failed, never "already up". The spare
must still hold the device's remap table: a blank disk in its place is refused, never formatted, and so is a
spare holding another table than the record names (E_SPARE_OTHER_TABLE, both UUIDs named; records written
before the UUID was kept are checked without it), also before a quiesced device is recovered (it stays
quiesced). Where systemd runs and a device's unit is enabled, that unit is started (systemctl start)
instead. Exit 1 if any failed. --foreground serves one device in this process (the systemd unit runs this):
it recovers the device when quiesced, adds it otherwise, and tells systemd READY=1 once it is live; a device
of its name already up under another process exits 73 (E_ALREADY_UP), and a spare holding another table
exits 73 (E_SPARE_OTHER_TABLE): the unit does not restart on either.

Options:
  --foreground  run one device's daemon in this process (stop with SIGTERM: the device is deleted)
  --json        print a JSON array of {"name","record","result","blockPath","devId","error"}
  -h, --help    show this help
`,
  down: `Usage: dmremap-ublk down [name...] [--force] [--json]

Stops every recorded device (or those named) that runs, as \`del\` does, keeping the records: \`up\`
brings them back. A device whose unit is enabled (systemd running) has its unit stopped first (systemctl
stop), so that a pending restart does not add it back. A running device that merely shares a record's name
(other disks) is reported as failed and left running. A device that is mounted, held by another block device
or swap is refused as del refuses it (checked before its unit is stopped): its line fails (E_DEVICE_IN_USE)
and it keeps running, while the other devices still go down. One line each; exit 1 if any failed.

Options:
  --force      stop devices even while they are in use (mounted, held, swap, a loop device on them, open exclusively)
  --json       print a JSON array of {"name","record","result","blockPath","devId","error"}
  -h, --help   show this help
`,
  'install-systemd': `Usage: dmremap-ublk install-systemd [--prefix DIR] [--force] [--json]

Writes the systemd units dmremap-ublk@.service (one recorded device; Type=notify, restarted on failure,
recovering the device) and dmremap-ublk.target into /etc/systemd/system, with ExecStart running this
installation (its node and bin/dmremap-ublk.js), and the udev rule 90-dmremap-ublk.rules (so that systemd
knows /dev/dmremap/<name> and fstab can mount it) into /etc/udev/rules.d. Where systemd runs: systemctl
daemon-reload, udevadm control --reload, and enables dmremap-ublk.target. Idempotent (an unchanged file is
left alone). A file edited here (it differs from what install-systemd wrote: each file's first line holds
the hash of the rest) is kept, and said so; --force replaces it. Then \`enable <name>\` enables a device's unit.

Options:
  --prefix DIR  install under DIR (DIR/etc/systemd/system, DIR/etc/udev/rules.d) and reload nothing
  --force       replace files edited here too
  --json        print {"files":[{"file","changed","action"}],"kept":[file...],"reloaded"}; action is
                written, unchanged or kept
  -h, --help    show this help
`,
} as const;
