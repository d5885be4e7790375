//! The one place that maps failures to statuses and the JSON error body
//! `{"error": {"code": "...", "message": "..."}}`. No HTTP framework here: the HTTP layer turns an
//! [`ApiError`] into a response, the envelope puts the same status and body inside its answer.
//!
//! Statuses are chosen for what DPS does with them: below 429 DPS fails the registration at once (right for
//! a malformed request, a rejection, a device no rule can place); 429 and every 5xx make DPS retry for
//! about seven minutes (right only while the service is not ready yet). A 5xx body never carries internals.

use serde::Serialize;

/// Every kind of error answer, with its status and snake_case code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400 `bad_request`: the body is not an AllocationRequest.
    BadRequest,
    /// 401 `unauthorized`: keys are configured and the request carries none that is valid.
    Unauthorized,
    /// 404 `not_found`: no route serves the path.
    NotFound,
    /// 405 `method_not_allowed`.
    MethodNotAllowed,
    /// 408 `request_timeout`: the body did not arrive in time (the connection is closed).
    RequestTimeout,
    /// 413 `payload_too_large`.
    PayloadTooLarge,
    /// 422 `no_eligible_hub`: no rule matched without a default, or the rule has no eligible hub.
    NoEligibleHub,
    /// 422 `twin_too_large`: the rendered twin or payload is over IoT Hub's or DPS's limits.
    TwinTooLarge,
    /// 503 `not_ready`: no valid policy revision has loaded yet (with Retry-After).
    NotReady,
    /// 500 `internal`.
    Internal,
    /// A rule's rejection: the rule's 4xx status and snake_case reason (default 403 `rejected`).
    Rejected {
        /// The rule's status.
        status: u16,
        /// The rule's reason, the error code.
        reason: String,
    },
}

impl ErrorCode {
    /// The status.
    pub fn status(&self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::NoEligibleHub | ErrorCode::TwinTooLarge => 422,
            ErrorCode::NotReady => 503,
            ErrorCode::Internal => 500,
            ErrorCode::Rejected { status, .. } => *status,
        }
    }

    /// The snake_case code in the body, the log and the `outcome` metric label.
    pub fn code(&self) -> &str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::NoEligibleHub => "no_eligible_hub",
            ErrorCode::TwinTooLarge => "twin_too_large",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Internal => "internal",
            ErrorCode::Rejected { reason, .. } => reason,
        }
    }

    /// Seconds DPS (or any client) should wait before retrying, for the errors that invite a retry.
    pub fn retry_after(&self) -> Option<u32> {
        matches!(self, ErrorCode::NotReady).then_some(5)
    }
}

/// An error answer: its code (which gives the status) and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.code())]
pub struct ApiError {
    /// What kind of error.
    pub code: ErrorCode,
    /// One line for the operator (DPS passes no body to the device).
    pub message: String,
}

impl ApiError {
    /// An error of this kind with this message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "a valid key is required (`?code=` or `x-functions-key`)",
        )
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "no such endpoint: see /openapi.json")
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed(allow: &str) -> Self {
        Self::new(ErrorCode::MethodNotAllowed, format!("this endpoint takes {allow} only"))
    }

    /// 408 `request_timeout`.
    pub fn request_timeout(seconds: u64) -> Self {
        Self::new(
            ErrorCode::RequestTimeout,
            format!("the request body did not arrive within {seconds} s"),
        )
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("request body exceeds {limit} bytes"),
        )
    }

    /// 503 `not_ready`.
    pub fn not_ready() -> Self {
        Self::new(ErrorCode::NotReady, "no valid policy revision has loaded yet")
    }

    /// 500 `internal`; the cause goes to the log, never to the body.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// The status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The snake_case code.
    pub fn code(&self) -> &str {
        self.code.code()
    }

    /// Seconds to wait before retrying, when the error invites a retry.
    pub fn retry_after(&self) -> Option<u32> {
        self.code.retry_after()
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: &self.message,
            },
        };
        serde_json::to_vec(&body)
            .unwrap_or_else(|_| br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec())
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
    /// `twin_too_large`, `not_ready`, `internal`, `method_not_allowed`, `request_timeout`.
    pub code: &'a str,
    /// One line.
    pub message: &'a str,
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

    #[test]
    fn a_rejection_carries_the_rules_status_and_reason() {
        let code = ErrorCode::Rejected {
            status: 451,
            reason: "residency_blocked".to_owned(),
        };
        assert_eq!((code.status(), code.code()), (451, "residency_blocked"));
        assert_eq!(ErrorCode::NoEligibleHub.status(), ErrorCode::TwinTooLarge.status());
    }
}
