//! What the pipeline's tests share: the default model set, as `hark models fetch` lays it out.

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
