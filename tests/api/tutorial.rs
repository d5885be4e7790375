//! Microsoft's custom allocation tutorial, reproduced byte for byte, and the same request always
//! answered with the same bytes.

use actix_web::test::TestRequest;
use serde_json::json;

use crate::helpers::{allocate, app, send, shipped};

const TOASTERS: &str = "contoso-toasters-hub-1098.azure-devices.net";
const HEATPUMPS: &str = "contoso-heatpumps-hub-1098.azure-devices.net";

fn tutorial_request(registration_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "enrollmentGroup": {
            "enrollmentGroupId": "contoso-custom-allocated-devices",
            "attestation": { "type": "symmetricKey" },
            "capabilities": { "iotEdge": false },
            "etag": "\"e8002ac8-0000-0300-0000-5f5a39d70000\"",
            "provisioningStatus": "enabled",
            "reprovisionPolicy": { "updateHubAssignment": true, "migrateDeviceData": true },
            "createdDateTimeUtc": "2026-09-10T14:21:43.8412345Z",
            "lastUpdatedDateTimeUtc": "2026-09-10T14:21:43.8412345Z",
            "allocationPolicy": "custom",
            "iotHubs": [TOASTERS, HEATPUMPS],
            "customAllocationDefinition": { "webhookUrl": "https://contoso-function-app-1098.azurewebsites.net/api/HttpTrigger1?****", "apiVersion": "2021-10-01" }
        },
        "deviceRuntimeContext": {
            "registrationId": registration_id,
            "symmetricKey": {},
            "payload": { "MyDeviceFirmwareVersion": "12.0.2.5", "MyDeviceProvisioningVersion": "1.0.0.0" }
        },
        "linkedHubs": [TOASTERS, HEATPUMPS]
    }))
    .expect("serializes")
}

#[actix_web::test]
async fn the_tutorial_toaster_gets_the_tutorial_answer_byte_for_byte() {
    let app = app(shipped()).await;
    let r = allocate(&app, tutorial_request("breakroom499-contoso-tstrsd-007")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        String::from_utf8(r.body).expect("utf-8"),
        format!(
            r#"{{"iotHubHostName":"{TOASTERS}","initialTwin":{{"tags":{{"deviceType":"toaster"}},"properties":{{"desired":{{"state":"ready","darknessSetting":"medium"}}}}}}}}"#
        )
    );
}

#[actix_web::test]
async fn the_tutorial_heat_pump_gets_the_tutorial_answer_byte_for_byte() {
    let app = app(shipped()).await;
    let r = allocate(&app, tutorial_request("mainbuilding167-contoso-hpsd-088")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8(r.body).expect("utf-8"),
        format!(
            r#"{{"iotHubHostName":"{HEATPUMPS}","initialTwin":{{"tags":{{"deviceType":"heatpump"}},"properties":{{"desired":{{"state":"on","temperatureSetting":"65"}}}}}}}}"#
        )
    );
}

#[actix_web::test]
async fn an_unrecognized_tutorial_device_gets_400() {
    let app = app(shipped()).await;
    let r = allocate(&app, tutorial_request("lobby001-contoso-sprinkler-1")).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        String::from_utf8(r.body).expect("utf-8"),
        r#"{"error":{"code":"unrecognized_device_registration","message":"Unrecognized device registration."}}"#
    );
}

#[actix_web::test]
async fn the_same_request_always_yields_the_same_bytes() {
    let first_app = app(shipped()).await;
    let second_app = app(shipped()).await;
    for i in 0..200 {
        let body = serde_json::to_vec(&json!({
            "enrollmentGroup": { "enrollmentGroupId": "fabrikam-sensors" },
            "deviceRuntimeContext": { "registrationId": format!("fab-{i}"), "payload": { "model": "m" } },
            "linkedHubs": ["fabrikam-weu-1.azure-devices.net", "fabrikam-neu-1.azure-devices.net", "fabrikam-eus-1.azure-devices.net", "fabrikam-sea-1.azure-devices.net"]
        }))
        .expect("serializes");
        let a = allocate(&first_app, body.clone()).await;
        let b = allocate(&first_app, body.clone()).await;
        let c = allocate(&second_app, body).await;
        assert_eq!(a.status, 200);
        assert_eq!((&a.body, &a.decision), (&b.body, &b.decision));
        assert_eq!((&a.body, &a.decision), (&c.body, &c.decision));
    }
}

#[actix_web::test]
async fn the_service_endpoints_answer() {
    let app = app(shipped()).await;
    for path in ["/", "/healthz", "/readyz"] {
        let r = send(&app, TestRequest::get().uri(path)).await;
        assert_eq!(r.status, 200, "{path}");
    }
    let r = send(&app, TestRequest::get().uri("/api/allocate")).await;
    assert_eq!((r.status, r.error_code().as_str()), (405, "method_not_allowed"));
    let explained = send(
        &app,
        TestRequest::post()
            .uri("/api/explain")
            .set_payload(tutorial_request("breakroom499-contoso-tstrsd-007")),
    )
    .await;
    let doc = explained.json();
    assert_eq!(doc["status"], 200);
    assert_eq!(doc["decision"]["rule"], "toasters");
    assert_eq!(doc["trace"]["rules"][1]["matched"], true);
}

#[actix_web::test]
async fn before_any_policy_loads_the_service_is_not_ready() {
    let app = crate::helpers::app_not_ready().await;
    let r = send(&app, TestRequest::get().uri("/readyz")).await;
    assert_eq!((r.status, r.retry_after.as_deref()), (503, Some("5")));
    let r = allocate(&app, tutorial_request("breakroom499-contoso-tstrsd-007")).await;
    assert_eq!(
        (r.status, r.error_code().as_str(), r.retry_after.as_deref()),
        (503, "not_ready", Some("5"))
    );
    let r = send(&app, TestRequest::get().uri("/healthz")).await;
    assert_eq!(r.status, 200);
}
