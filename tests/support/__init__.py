"""Helpers shared by the tests: servers, fault proxies, test-only rules and doubles, targets."""
