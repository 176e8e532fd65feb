"""Code shared by every deltaps node: wire protocol, transport, featurization, sharding, config.

Nothing in here imports ps/, worker/, serving/ or deploy/.
"""
