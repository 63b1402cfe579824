// Running a user's command for lock -- CMD and take --exec CMD: signals passed on, status kept,
// and the command's process group ended if patro dies.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace patro::cli {

/// Runs cmd with extra_env added to the environment (replacing variables of the same name) and,
/// if stdin_data is given, that data on its standard input. SIGINT, SIGTERM and SIGHUP that reach
/// patro are passed on to it (they must be blocked already: handled_signals()). Returns its exit
/// status, 128+N if signal N ended it, or 127 if it cannot be run.
///
/// The command runs in a process group of its own, under a small reaper process: if patro dies
/// for any reason (PR_SET_PDEATHSIG), the reaper sends the group SIGTERM, and SIGKILL after
/// `grace`, so that what patro held for the command (a lock, a job's lease) outlives it by no
/// more than that.
int run_command(const std::vector<std::string>& cmd, const std::vector<std::string>& extra_env,
                const std::string* stdin_data = nullptr,
                std::chrono::milliseconds grace = std::chrono::seconds(1));

}  // namespace patro::cli
