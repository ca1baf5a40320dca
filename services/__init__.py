"""paymesh's services.

gRPC's C core runs fork handlers by default; when a process forks (`paymesh up`'s supervisor and
`LocalPlatform` starting children, pg_ctl, RQ's scheduler) while another thread is inside gRPC,
they are skipped and the parent's poller can abort ("Check failed: next_worker->state ==
KICKED"). No paymesh child uses a gRPC object of its parent (each execs or makes its own
channels), so the handlers are switched off here, before any module imports grpc; an explicit
setting wins.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
