//! [`ApiError`] as an actix-web response: its status, `Content-Type: application/json`, `Retry-After` when
//! the error invites a retry, and the JSON body the answer layer renders.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

use crate::answer::{ApiError, ErrorCode};

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
        if let Some(secs) = self.retry_after() {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if self.code == ErrorCode::RequestTimeout {
            // The rest of a stalled body may never come: do not wait for it on this connection.
            res.force_close();
        }
        res.body(self.body())
    }
}
