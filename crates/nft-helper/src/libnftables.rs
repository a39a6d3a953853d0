//! The few calls of libnftables(3) we use, behind a safe context type.

use std::ffi::{c_char, c_int, CStr, CString};

#[repr(C)]
struct NftCtx {
    _opaque: [u8; 0],
}

// The versioned file name: the unversioned link comes only with the -dev package.
#[link(name = "libnftables.so.1", kind = "dylib", modifiers = "+verbatim")]
extern "C" {
    fn nft_ctx_new(flags: u32) -> *mut NftCtx;
    fn nft_ctx_free(ctx: *mut NftCtx);
    fn nft_ctx_buffer_output(ctx: *mut NftCtx) -> c_int;
    fn nft_ctx_buffer_error(ctx: *mut NftCtx) -> c_int;
    fn nft_ctx_get_output_buffer(ctx: *mut NftCtx) -> *const c_char;
    fn nft_ctx_get_error_buffer(ctx: *mut NftCtx) -> *const c_char;
    fn nft_run_cmd_from_buffer(ctx: *mut NftCtx, buf: *const c_char) -> c_int;
}

/// `NFT_CTX_DEFAULT`.
const DEFAULT_FLAGS: u32 = 0;

/// One libnftables context: its netlink socket belongs to the network namespace the thread
/// was in when it was made.
pub struct Context(*mut NftCtx);

impl Context {
    pub fn new() -> Result<Context, String> {
        // SAFETY: plain constructor; a null result is checked below.
        let ctx = unsafe { nft_ctx_new(DEFAULT_FLAGS) };
        if ctx.is_null() {
            return Err("libnftables could not make a context".to_string());
        }
        // SAFETY: ctx is a live context of ours; both only switch its output to memory buffers.
        let buffered = unsafe { nft_ctx_buffer_output(ctx) == 0 && nft_ctx_buffer_error(ctx) == 0 };
        let context = Context(ctx);
        match buffered {
            true => Ok(context),
            false => Err("libnftables could not buffer its output".to_string()),
        }
    }

    /// Runs `commands` (what `nft -f` reads); their output, or the error messages.
    pub fn run(&self, commands: &str) -> Result<String, String> {
        let commands =
            CString::new(commands).map_err(|_| "commands hold a NUL byte".to_string())?;
        // SAFETY: self.0 is a live context and commands a NUL-terminated string that outlives
        // the call; the buffers read after it are NUL-terminated strings owned by the context,
        // copied out before the next call can change them.
        unsafe {
            let rc = nft_run_cmd_from_buffer(self.0, commands.as_ptr());
            let output = text(nft_ctx_get_output_buffer(self.0));
            let error = text(nft_ctx_get_error_buffer(self.0));
            match rc {
                0 => Ok(output),
                _ => Err(error.trim().to_string()),
            }
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: self.0 is a live context, freed once here.
        unsafe { nft_ctx_free(self.0) }
    }
}

/// # Safety
/// `p` is null or a NUL-terminated string.
unsafe fn text(p: *const c_char) -> String {
    match p.is_null() {
        true => String::new(),
        // SAFETY: non-null and NUL-terminated, as the caller promises.
        false => unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned(),
    }
}
