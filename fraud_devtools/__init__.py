"""Real services on this machine's loopback, for `make demo`, the benchmarks and the tests:
Redis, a Kafka broker (KRaft, from Maven Central jars), stream workers, the REST server and a
Spark Connect server, each a child process (or thread) that starts, waits until ready and
stops the same way."""
