//! Chat prompts in ChatML (`<|im_start|>role\n…<|im_end|>\n`), which SmolLM2 and Qwen2.5 use.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// One message as ChatML.
pub fn chatml_message(m: &ChatMessage) -> String {
    format!("<|im_start|>{}\n{}<|im_end|>\n", m.role.as_str(), m.content)
}

/// The whole prompt, ending with the opened assistant turn the model completes.
pub fn chatml_prompt(messages: &[ChatMessage]) -> String {
    let mut s: String = messages.iter().map(chatml_message).collect();
    s.push_str("<|im_start|>assistant\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_layout() {
        let p = chatml_prompt(&[
            ChatMessage::new(Role::System, "Be brief."),
            ChatMessage::new(Role::User, "Hi"),
        ]);
        assert_eq!(p, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }
}
