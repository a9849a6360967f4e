"""The semantic tier: a search whose query means the same as one already answered gets that
answer. ``embedders`` turn text into vectors, ``tier`` keeps them in PostgreSQL + pgvector,
``guard`` (with the word lists in ``lexicon``) refuses near neighbours that differ in what
matters (numbers, entities, negation, direction)."""
