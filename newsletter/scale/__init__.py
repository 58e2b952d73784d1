"""Scale mode: the same jobs on procrastinate workers sharing one PostgreSQL database."""
