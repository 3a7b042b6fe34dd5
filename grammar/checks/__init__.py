"""The rules of grammar.lint, by what they look at: FROM lines, the steps of stages, the text."""
