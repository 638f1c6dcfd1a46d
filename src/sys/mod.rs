//! The only home of `unsafe`: thin, documented wrappers over Linux system calls.
