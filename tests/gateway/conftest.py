from gateway_fixtures import gw_sidecar, nginx_available, short_tmp  # noqa: F401  (fixtures)
