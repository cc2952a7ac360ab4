//! What the pipeline's tests share: the default model set, as `hark models fetch` lays it out,
//! and its real recorded speech.

use hark_pipeline::ModelPaths;

pub fn default_models() -> ModelPaths {
    let m = hark_core::testing::models_dir();
    ModelPaths {
        whisper: m.join("whisper-tiny.en/ggml-tiny.en.bin"),
        llm: m.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        voice: m.join("piper-joe/en_US-joe-medium.onnx"),
        voice_config: m.join("piper-joe/en_US-joe-medium.onnx.json"),
        espeak_data: m.join("espeak/espeak-ng-data"),
        vad: m.join("silero-vad/silero_vad.onnx"),
        onnxruntime: m.join("onnxruntime/libonnxruntime.so.1.32.0"),
    }
}

/// A pocketsphinx-testdata recording (`hark models fetch --set test`): 16 kHz mono raw PCM.
#[allow(dead_code)] // not every test binary uses it
pub fn raw(name: &str) -> Vec<f32> {
    let path = hark_core::testing::models_dir()
        .join("testdata/pocketsphinx")
        .join(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `hark models fetch --set test`",
                path.display()
            )
        })
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}
