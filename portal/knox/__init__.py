"""Shared Knox plumbing: regional hosts, authentication (token signing, OAuth, Gen1 key), the paced and retrying
HTTP session, and Knox error parsing. Service apps (kdp, guard, efota) build their clients on top of this."""
