"""Network policy: ingress allow-lists between containers and services (spec `policies:`)."""
