"""The durable task record: long-running work as steps that hosts claim under a lease."""
