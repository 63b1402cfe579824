"""What the scripts beside it share in driving patro-bench's roles (`patro-bench --role ...`)."""
import subprocess


def stop(procs, timeout):
    """Ends the processes: SIGTERM to those still running, then waits for each, at most timeout
    seconds before a SIGKILL."""
    procs = list(procs)  # walked twice
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
