"""Launching and operating clusters: spec -> processes, the supervisor, the `deltaps` CLI."""
import os

# One BLAS thread per process, asked for before anything imports numpy (every `deltaps` command
# and node starts here): deltaps' processes make small matrix products at most (a deep model's
# serving step), and each thread OpenBLAS starts beside the first spins for a while before it
# sleeps, a core taken from a starting `deltaps train` on a small machine. A value the user set
# is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
