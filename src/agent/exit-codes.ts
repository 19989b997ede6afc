/**
 * The exit codes of `telematics-agent run` that mean something to the service manager, in one place: the agent exits
 * with them, and provisioning writes them into the systemd unit. Constants only; nothing here can fail.
 */

/**
 * Exit code of a run that stopped because a remote command asked for a restart: EX_TEMPFAIL, which the systemd unit
 * (Restart=on-failure, RestartForceExitStatus=) answers by starting the agent again.
 */
export const RESTART_EXIT_CODE = 75;
