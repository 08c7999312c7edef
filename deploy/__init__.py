"""How the platform runs: the local stack (`deploy.local.stack`), and the files of the
Docker, Kubernetes, Prometheus and Grafana deployments beside it."""
