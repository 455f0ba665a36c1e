"""The in-process inference engine: program-aware continuous batching on transformers models.

Pure-Python parts (no torch): `config`, `sequence`, `kv`, `ttl`, `plan`, `scheduler`, `clock`,
`conformal`, `spec_policy`. Tensor parts: `attention`, `rows`, `runner`, `sampling`, `draft`,
`speculative` (draft/target decoding). The loop is `engine`; `client.EngineLLM` puts it
behind the `harness.llm.base.LLM` protocol.
"""
