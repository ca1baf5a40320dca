import { Component, OnInit, computed, inject, input, signal } from '@angular/core';
import { MatButtonModule } from '@angular/material/button';
import { ActivatedRoute, Router } from '@angular/router';

import { PaymentService, type Checkout } from '@gen/paymesh/payment/v1/payment_pb';
import { formatMoney } from '@shared/money';
import { ApiError, call } from '@shared/rest';

/**
 * The simulated card issuer's 3-D Secure challenge, as Stripe's test page: the customer
 * completes or fails it, and goes back to the checkout page, which shows what followed.
 */
@Component({
  selector: 'pm-authenticate-page',
  imports: [MatButtonModule],
  template: `
    <main class="page">
      <section class="card challenge" aria-labelledby="challenge-title" data-testid="challenge">
        <header class="summary">
          <p class="merchant">Your bank · 3-D Secure</p>
          <h1 id="challenge-title">Confirm this payment</h1>
          @if (checkout(); as c) {
            <p data-testid="challenge-amount">{{ c.merchantName }} asks to charge {{ amount() }} to your card.</p>
          }
          <p class="test-mode">Test authentication page: no bank is asked. Complete or fail it.</p>
        </header>
        <div class="body">
          @if (error()) {
            <p class="alert" role="alert" data-testid="challenge-error">{{ error() }}</p>
          }
          <div class="actions">
            <button mat-flat-button type="button" data-testid="complete" [disabled]="busy()" (click)="answer('complete')">
              Complete authentication
            </button>
            <button mat-stroked-button type="button" data-testid="fail" [disabled]="busy()" (click)="answer('fail')">
              Fail authentication
            </button>
          </div>
        </div>
      </section>
    </main>
  `,
  styles: `
    .challenge .actions { display: flex; gap: 0.75rem; flex-wrap: wrap; }
  `,
})
export class AuthenticatePage implements OnInit {
  readonly paymentId = input.required<string>();
  private readonly route = inject(ActivatedRoute);
  private readonly router = inject(Router);

  readonly checkout = signal<Checkout | null>(null);
  readonly error = signal('');
  readonly busy = signal(false);
  readonly amount = computed(() => {
    const checkout = this.checkout();
    return checkout ? formatMoney(checkout.amount, checkout.currency) : '';
  });

  private clientSecret = '';
  /** One key per answer: a double click or a retried request answers once. */
  private readonly keys: Record<string, string> = {};

  ngOnInit(): void {
    this.clientSecret = this.route.snapshot.queryParamMap.get('client_secret') ?? '';
    void this.load();
  }

  private async load(): Promise<void> {
    try {
      const checkout = await call(PaymentService.method.getCheckout, {
        paymentId: this.paymentId(),
        clientSecret: this.clientSecret,
      });
      this.checkout.set(checkout);
      if (checkout.status !== 'requires_action') await this.back();
    } catch {
      this.error.set('This authentication link is not valid. Go back to the shop and start again.');
    }
  }

  async answer(result: 'complete' | 'fail'): Promise<void> {
    this.busy.set(true);
    this.error.set('');
    this.keys[result] ??= crypto.randomUUID();
    try {
      await call(
        PaymentService.method.authenticatePayment,
        { id: this.paymentId(), clientSecret: this.clientSecret, result },
        { headers: { 'Idempotency-Key': this.keys[result] } },
      );
      await this.back();
    } catch (error) {
      if (error instanceof ApiError && error.code === 'payment_state_invalid') {
        await this.back(); // answered already: the checkout page shows what followed
        return;
      }
      this.error.set(error instanceof ApiError && error.status !== 0 ? error.message : 'We could not reach the payment server. Try again.');
    } finally {
      this.busy.set(false);
    }
  }

  /** Back to the checkout page, which follows the payment from here. */
  private async back(): Promise<void> {
    await this.router.navigate(['/', this.paymentId()], { queryParams: { client_secret: this.clientSecret } });
  }
}
