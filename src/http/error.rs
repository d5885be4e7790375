//! The one place that maps failures to HTTP statuses and the JSON error body
//! `{"error": {"code": "...", "message": "..."}}`.
//!
//! Statuses are chosen for what DPS does with them: below 429 DPS fails the registration at once (right for
//! a malformed request, a rejection, a device no rule can place); 429 and every 5xx make DPS retry for
//! about seven minutes (right only while the service is not ready yet). A 5xx body never carries internals.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// An error answer: status, snake_case code and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// snake_case code.
    pub code: String,
    /// One line for the operator (DPS passes no body to the device).
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            401,
            "unauthorized",
            "a valid key is required (`?code=` or `x-functions-key`)",
        )
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(413, "payload_too_large", format!("request body exceeds {limit} bytes"))
    }

    /// 503 `not_ready`.
    pub fn not_ready() -> Self {
        Self::new(503, "not_ready", "no valid policy revision has loaded yet")
    }

    /// 500 `internal`; the cause goes to the log, never to the body.
    pub fn internal() -> Self {
        Self::new(500, "internal", "internal error")
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
        }
        let body = Body {
            error: Inner {
                code: &self.code,
                message: &self.message,
            },
        };
        serde_json::to_vec(&body)
            .unwrap_or_else(|_| br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec())
    }

    /// Seconds DPS (or any client) should wait before retrying, for statuses that invite a retry.
    pub fn retry_after(&self) -> Option<u32> {
        (self.status == 503).then_some(5)
    }
}

/// `{"error": {"code", "message"}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// The error.
    pub error: ErrorDetail<'a>,
}

/// The error's code and message.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail<'a> {
    /// snake_case: `bad_request`, `unauthorized`, a rule's reason, `payload_too_large`, `no_eligible_hub`,
    /// `twin_too_large`, `not_ready`, `internal`, `method_not_allowed`.
    pub code: &'a str,
    /// One line.
    pub message: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
        if let Some(secs) = self.retry_after() {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        res.body(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_have_code_and_message() {
        let e = ApiError::bad_request("missing field `linkedHubs`");
        assert_eq!(
            String::from_utf8(e.body()).expect("utf-8"),
            r#"{"error":{"code":"bad_request","message":"missing field `linkedHubs`"}}"#
        );
        assert_eq!(ApiError::not_ready().retry_after(), Some(5));
        assert_eq!(ApiError::internal().retry_after(), None);
    }
}
