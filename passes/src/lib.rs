//! Pass manager (placeholder until the passes land).
