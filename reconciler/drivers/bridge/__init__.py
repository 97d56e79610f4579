"""The bridge driver: one Linux bridge per network, containers joined to it by veth pairs."""
