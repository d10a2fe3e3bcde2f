"""Where the swarms live: in this process (`memory`) or in Redis (`redisstore`), behind
one interface (`base.Store`), so that the HTTP and UDP shells do not care which."""
