/**
 * The agent's exit codes that something outside the process acts on: the systemd unit (src/provision/service-unit.ts)
 * answers them. Constants only, so that the provisioning tools read them without loading the agent.
 */

/**
 * Exit code of a run that stopped because a remote command asked for a restart: EX_TEMPFAIL, which the systemd unit
 * (Restart=on-failure, RestartForceExitStatus=) answers by starting the agent again.
 */
export const RESTART_EXIT_CODE = 75;
