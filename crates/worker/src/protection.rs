//! ECS task scale-in protection while jobs run (placeholder; see issue 7).
