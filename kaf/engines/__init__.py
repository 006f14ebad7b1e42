"""
Storage engines: each provides L{kaf.engine.IEngine} and L{kaf.engine.ILog},
and imports nothing of the HTTP layer (L{kaf.api}).
"""
