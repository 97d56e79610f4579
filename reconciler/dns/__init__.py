"""The embedded DNS resolver: one process answering at 127.0.0.11:53 inside every container namespace.

records.py builds its records from the desired state (pure), wire.py reads and writes DNS messages,
server.py is the process, supervise.py starts, reloads and stops it.
"""

RESOLV_CONF_HEADER = "# written by netreconciler: the embedded DNS resolver"
# ndots:0: a container's peer is one label ("web"), asked as it is, before any search domain.
RESOLV_CONF = f"{RESOLV_CONF_HEADER}\nnameserver 127.0.0.11\noptions ndots:0\n"
# What the observed hosts file says when its resolv.conf is gone or changed (observe/host.py).
RESOLV_CONF_DRIFT = "# resolv.conf: not the resolver's (written again)\n"
