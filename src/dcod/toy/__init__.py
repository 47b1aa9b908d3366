"""The toy world (docs/toy_world.md): a synthetic chain-arithmetic task, its character tokenizer and an
exact programmatic teacher, so the whole paper pipeline runs on a laptop CPU in minutes.

- ``dcod.toy.world``: problems, the direct/decomposed step styles, splits, trace analysis;
- ``dcod.toy.tokenizer``: the character tokenizer saved as a ``PreTrainedTokenizerFast``;
- ``dcod.toy.teacher``: ``ToyTeacher``, exact next-token distributions at any prefix + sampling.

Submodules are imported explicitly (``from dcod.toy.teacher import ToyTeacher``) so that importing
the world alone does not pull in torch or transformers.
"""
