//! LLM providers (Ollama, OpenAI-compatible), the base agent and the template agent.
