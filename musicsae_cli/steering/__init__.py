"""Steering generation: directions (probe, SAE latents, difference of means, file) applied during generation.

    load_direction(DirectionConfig, adapter) -> Direction            directions.py
    build_steering(SteeringConfig, adapter, direction) -> Steering     edits.py  (edits for adapter.intervene)
    AddEdit, LatentEdit, Schedule                                      edits.py
    steer_generate(SteerGenerateConfig, out) -> SteeredGeneration      generate.py  (results.py)
    steer_sweep(SteerSweepConfig, out) -> SweepResult                  sweep.py
    steer_audio(source, out, SteerAudioConfig) -> SteeredAudio         audio.py
"""
