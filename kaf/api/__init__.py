"""
The HTTP layer: Kaf's own HTTP/1.1 server, the routes, live streams, access
control, metrics and the web console. It speaks to the storage engine only
through L{kaf.engine}, and imports nothing of L{kaf.engines}.
"""
