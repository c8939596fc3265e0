"""How every voxmill process starts: the ``voxmill`` command (API, worker pools, beat, Flower,
embedded render and demo) plus service units, Prometheus and Grafana files under infra/."""
