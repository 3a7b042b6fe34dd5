"""The typed event stream of a build and its sinks: plain, JSON, quiet, the live terminal view,
the Chrome trace, and the per-step summary."""
