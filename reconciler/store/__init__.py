"""The etcd cluster store: hosts, endpoints and overlay addresses shared through an etcd cluster."""
