// Types of bin/spawn-env.js (plain JavaScript, loaded by bin/early-daemon.js before the CLI's bundle).
export declare const READY_FD_ENV: 'DMREMAP_READY_FD';
export declare const SUPERVISOR_PID_ENV: 'DMREMAP_SUPERVISOR_PID';
export declare const DAEMON_THREADPOOL_SIZE: string;
export declare const SERVICE_MANAGER_ENV: readonly string[];
export declare function detachedEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
export declare function daemonEnv(env: NodeJS.ProcessEnv, supervisorPid: number): NodeJS.ProcessEnv;
