//! callgate gateway library.
