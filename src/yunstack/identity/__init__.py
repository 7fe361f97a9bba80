"""Identity (Keystone v3): users, projects, roles, tokens, application credentials, the catalog."""
