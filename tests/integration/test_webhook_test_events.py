def test_test_event__to_a_live_endpoint_is_livemode_false_and_its_delivery_is_live(
    sessions: Any, api: httpx.Client, merchant: MerchantKeys, receiver: Receiver
) -> None:
    with transaction(sessions) as session:
        live_key = merchants.create_api_key(
            session, merchant_id=merchant.id, mode="live", kind="secret"
        ).key
    path = f"/test-live/{merchant.id}"
    endpoint = create_endpoint(api, live_key, receiver.url(path))
    assert endpoint["livemode"] is True
    answer = _test(api, live_key, str(endpoint["id"]), {"type": "refund.succeeded"})
    assert answer.status_code == 200, answer.text
    delivery = answer.json()
    assert delivery["livemode"] is True

    [received] = receiver.wait_for(path, 1)
    payload = Webhook(str(endpoint["secret"])).verify(received.body, received.headers)
    # Not real money, whatever the endpoint's mode.
    assert payload["livemode"] is False and payload["data"]["object"]["livemode"] is False
    # The delivery is the live endpoint's (its live log lists it); the event is a test-mode one.
    live, test = {"X-API-Key": live_key}, {"X-API-Key": merchant.secret_key}
    assert api.get(f"/v1/webhook_deliveries/{delivery['id']}", headers=live).status_code == 200
    assert api.get(f"/v1/webhook_deliveries/{delivery['id']}", headers=test).status_code == 404
    assert api.get(f"/v1/events/{delivery['event_id']}", headers=test).status_code == 200
    assert api.get(f"/v1/events/{delivery['event_id']}", headers=live).status_code == 404
