"""The macvlan driver: containers as macvlan children of a host link, on the parent's own LAN."""
