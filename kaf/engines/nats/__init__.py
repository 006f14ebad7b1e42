"""
The NATS JetStream engine: each log a stream on a NATS cluster, its
message numbers the stream's sequence numbers.  Kaf processes in front of
one cluster keep no state of their own: any of them serves every log.
"""
