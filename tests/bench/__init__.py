"""The benchmark harness behind `make bench`: our server against a bare aio server and the seed's, in one run."""
