"""The synchronous credit check (嵌入式): a department asks, before it decides a matter,
whether the entity is listed, and the check becomes a matter event."""
