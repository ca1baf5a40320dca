import {
  Component,
  ElementRef,
  OnDestroy,
  OnInit,
  computed,
  inject,
  input,
  signal,
  viewChild,
} from '@angular/core';
import {
  AbstractControl,
  FormControl,
  FormGroup,
  ReactiveFormsModule,
  ValidationErrors,
  Validators,
} from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { MatProgressSpinnerModule } from '@angular/material/progress-spinner';
import { ActivatedRoute, Router } from '@angular/router';

import { PaymentService, type Checkout, type CheckoutSavedCard } from '@gen/paymesh/payment/v1/payment_pb';
import { ApiError, call } from '@shared/rest';
import { formatMoney } from '@shared/money';
import {
  BRAND_NAMES,
  DECLINE_MESSAGES,
  cvcLength,
  detectBrand,
  digitsOf,
  expiryInFuture,
  formatExpiry,
  formatNumber,
  luhnValid,
  parseExpiry,
} from './card';

type Phase = 'loading' | 'form' | 'processing' | 'succeeded' | 'unavailable';

/** How often the page asks for the outcome while the payment is processing, and for how long. */
const POLL_INTERVAL_MS = 600;
const POLL_DEADLINE_MS = 60_000;
/** How long the success message shows before the customer is sent back to the shop. */
const RETURN_DELAY_MS = 1500;

function cardNumberValidator(control: AbstractControl): ValidationErrors | null {
  const digits = digitsOf(String(control.value ?? ''));
  if (!digits) return null; // `required` reports it
  return luhnValid(digits) ? null : { cardNumber: true };
}

function expiryValidator(control: AbstractControl): ValidationErrors | null {
  const text = String(control.value ?? '');
  if (!digitsOf(text)) return null;
  const parsed = parseExpiry(text);
  if (!parsed) return { expiryFormat: true };
  return expiryInFuture(parsed.month, parsed.year) ? null : { expired: true };
}

/** The hosted checkout page of one payment: summary, card form, outcome. */
@Component({
  selector: 'pm-checkout-page',
  imports: [
    ReactiveFormsModule,
    MatButtonModule,
    MatFormFieldModule,
    MatInputModule,
    MatProgressSpinnerModule,
  ],
  templateUrl: './checkout-page.html',
  styleUrl: './checkout-page.scss',
})
export class CheckoutPage implements OnInit, OnDestroy {
  readonly paymentId = input.required<string>();
  private readonly route = inject(ActivatedRoute);
  private readonly router = inject(Router);

  readonly phase = signal<Phase>('loading');
  readonly checkout = signal<Checkout | null>(null);
  readonly decline = signal<string>('');
  readonly error = signal<string>('');
  readonly amount = computed(() => {
    const checkout = this.checkout();
    return checkout ? formatMoney(checkout.amount, checkout.currency) : '';
  });

  readonly form = new FormGroup({
    number: new FormControl('', { nonNullable: true, validators: [Validators.required, cardNumberValidator] }),
    expiry: new FormControl('', { nonNullable: true, validators: [Validators.required, expiryValidator] }),
    cvc: new FormControl('', { nonNullable: true, validators: [Validators.required, (c) => this.cvcValidator(c)] }),
  });
  /** The payment's customer's saved cards the server offers (only while a card is awaited). */
  readonly savedCards = computed(() => this.checkout()?.savedPaymentMethods ?? []);
  /** What pays: a saved card's payment method id, or 'new' for the card form. */
  readonly choice = signal<string>('new');
  readonly brand = signal(detectBrand(''));
  readonly brandName = computed(() => BRAND_NAMES[this.brand()]);

  private readonly numberInput = viewChild<ElementRef<HTMLInputElement>>('numberInput');
  private readonly alert = viewChild<ElementRef<HTMLElement>>('alert');
  private readonly heading = viewChild<ElementRef<HTMLElement>>('outcome');

  private clientSecret = '';
  /** One key per attempt: a double click or a retried request of the same attempt pays once. */
  private attemptKey: string | null = null;
  private submitting = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private destroyed = false;

  ngOnInit(): void {
    this.clientSecret = this.route.snapshot.queryParamMap.get('client_secret') ?? '';
    this.form.valueChanges.subscribe(() => {
      // Changing the card makes it a new attempt with a new key.
      if (!this.submitting) this.attemptKey = null;
    });
    void this.load();
  }

  ngOnDestroy(): void {
    this.destroyed = true;
    clearTimeout(this.timer);
  }

  private cvcValidator(control: AbstractControl): ValidationErrors | null {
    const digits = digitsOf(String(control.value ?? ''));
    if (!digits) return null;
    return digits.length === cvcLength(this.brand()) ? null : { cvc: true };
  }

  /** Chooses a saved card (its id) or 'new'; another choice is a new attempt with a new key. */
  choose(choice: string): void {
    if (this.submitting) return;
    this.choice.set(choice);
    this.attemptKey = null;
    this.decline.set('');
  }

  savedLabel(saved: CheckoutSavedCard): string {
    const brand = BRAND_NAMES[saved.brand as keyof typeof BRAND_NAMES] || saved.brand || 'Card';
    const month = String(saved.expMonth).padStart(2, '0');
    const year = String(saved.expYear % 100).padStart(2, '0');
    return `${brand} ending in ${saved.last4}, expires ${month}/${year}`;
  }

  onNumberInput(event: Event): void {
    const field = event.target as HTMLInputElement;
    const formatted = formatNumber(field.value);
    this.brand.set(detectBrand(formatted));
    this.form.controls.number.setValue(formatted);
    this.form.controls.cvc.updateValueAndValidity();
  }

  onExpiryInput(event: Event): void {
    const field = event.target as HTMLInputElement;
    this.form.controls.expiry.setValue(formatExpiry(field.value));
  }

  onCvcInput(event: Event): void {
    const field = event.target as HTMLInputElement;
    this.form.controls.cvc.setValue(digitsOf(field.value).slice(0, 4));
  }

  private async load(): Promise<void> {
    if (!this.clientSecret) {
      this.unavailable('This checkout link is missing its secret. Go back to the shop and try again.');
      return;
    }
    try {
      const checkout = await call(PaymentService.method.getCheckout, {
        paymentId: this.paymentId(),
        clientSecret: this.clientSecret,
      });
      this.checkout.set(checkout);
      // A returning customer most likely pays with the card saved last.
      this.choice.set(checkout.savedPaymentMethods[0]?.id ?? 'new');
      this.show(checkout, false);
    } catch (error) {
      this.unavailable(
        error instanceof ApiError && [400, 401, 403, 404].includes(error.status)
          ? 'This checkout link is not valid. Go back to the shop and start again.'
          : 'The payment page could not be loaded. Check your connection and reload the page.',
      );
    }
  }

  private unavailable(message: string): void {
    this.error.set(message);
    this.phase.set('unavailable');
  }

  /** Moves the page to what the payment's status says. */
  private show(checkout: Checkout, afterAttempt: boolean): void {
    switch (checkout.status) {
      case 'succeeded':
      case 'requires_capture':
        this.phase.set('succeeded');
        this.focusLater(this.heading);
        this.returnLater(checkout);
        break;
      case 'processing':
        this.phase.set('processing');
        this.poll(Date.now() + POLL_DEADLINE_MS);
        break;
      case 'requires_action':
        // The card's bank asks for 3-D Secure: its challenge page, then back here.
        this.phase.set('processing');
        void this.router.navigate(['/', this.paymentId(), 'authenticate'], {
          queryParams: { client_secret: this.clientSecret },
        });
        break;
      case 'canceled':
        this.unavailable('This payment was canceled. Go back to the shop to start again.');
        break;
      case 'failed':
        this.phase.set('form');
        if (afterAttempt || checkout.failureCode) {
          this.showDecline(checkout);
        }
        break;
      default:
        this.phase.set('form');
    }
  }

  private showDecline(checkout: Checkout): void {
    const friendly = DECLINE_MESSAGES[checkout.failureCode];
    this.decline.set(friendly ?? (checkout.failureMessage || 'Your card could not be charged. Try another card.'));
    this.focusLater(this.alert);
  }

  private poll(deadline: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(async () => {
      if (this.destroyed) return;
      try {
        const checkout = await call(PaymentService.method.getCheckout, {
          paymentId: this.paymentId(),
          clientSecret: this.clientSecret,
        });
        this.checkout.set(checkout);
        if (checkout.status !== 'processing') {
          this.show(checkout, true);
          return;
        }
      } catch {
        // A dropped poll is retried below until the deadline.
      }
      if (Date.now() < deadline) {
        this.poll(deadline);
      } else {
        this.error.set('Your payment is taking longer than usual. You will get a confirmation from the shop; do not pay again.');
      }
    }, POLL_INTERVAL_MS);
  }

  async pay(): Promise<void> {
    if (this.submitting) {
      return; // a second click of the same attempt
    }
    const savedId = this.choice() === 'new' ? '' : this.choice();
    let paymentMethod: { id: string } | { card: { number: string; expMonth: number; expYear: number; cvc: string } };
    if (savedId) {
      paymentMethod = { id: savedId };
    } else {
      this.form.markAllAsTouched();
      if (this.form.invalid) {
        this.focusFirstInvalid();
        return;
      }
      const expiry = parseExpiry(this.form.controls.expiry.value);
      if (!expiry) return;
      paymentMethod = {
        card: {
          number: digitsOf(this.form.controls.number.value),
          expMonth: expiry.month,
          expYear: expiry.year,
          cvc: this.form.controls.cvc.value,
        },
      };
    }
    this.submitting = true;
    this.attemptKey ??= crypto.randomUUID();
    this.decline.set('');
    this.error.set('');
    this.phase.set('processing');
    try {
      const payment = await call(
        PaymentService.method.confirmPayment,
        {
          id: this.paymentId(),
          clientSecret: this.clientSecret,
          paymentMethod,
        },
        { headers: { 'Idempotency-Key': this.attemptKey } },
      );
      const current = this.checkout();
      if (current) {
        const next = { ...current, status: payment.status, failureCode: payment.failureCode, failureMessage: payment.failureMessage };
        this.checkout.set(next);
        this.show(next, true);
      }
      if (payment.status === 'failed') {
        this.attemptKey = null;
      }
    } catch (error) {
      this.phase.set('form');
      if (error instanceof ApiError && error.code === 'payment_state_invalid') {
        // The payment no longer waits for a card: an earlier request of this attempt may have
        // arrived after all, or the payment ended. Its status says what to show.
        await this.afterRefusal();
        return;
      }
      if (error instanceof ApiError && error.status !== 0) {
        // The server refused this attempt for good: the next one is a new attempt.
        this.attemptKey = null;
        const friendly = DECLINE_MESSAGES[error.code];
        this.decline.set(friendly ?? error.message);
      } else {
        // The request may or may not have arrived: retrying reuses the key, so it pays once.
        this.decline.set('We could not reach the payment server. Check your connection and press Pay again.');
      }
      this.focusLater(this.alert);
    } finally {
      this.submitting = false;
    }
  }

  private async afterRefusal(): Promise<void> {
    try {
      const checkout = await call(PaymentService.method.getCheckout, {
        paymentId: this.paymentId(),
        clientSecret: this.clientSecret,
      });
      this.checkout.set(checkout);
      if (['processing', 'requires_action', 'succeeded', 'requires_capture'].includes(checkout.status)) {
        this.show(checkout, true);
        return;
      }
    } catch {
      // Unknown: say what the customer can do.
    }
    this.unavailable('This payment can no longer be paid here. Go back to the shop to start a new payment.');
  }

  /** Clears the card so the customer can enter another one. */
  tryAnotherCard(): void {
    this.decline.set('');
    this.attemptKey = null;
    this.choice.set('new');
    this.form.reset();
    this.brand.set('unknown');
    this.focusLater(this.numberInput);
  }

  returnUrl(): string {
    const checkout = this.checkout();
    if (!checkout?.returnUrl) return '';
    const url = new URL(checkout.returnUrl, window.location.href);
    url.searchParams.set('payment_id', checkout.paymentId);
    url.searchParams.set('redirect_status', checkout.status);
    return url.toString();
  }

  private returnLater(checkout: Checkout): void {
    if (!checkout.returnUrl) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (!this.destroyed) window.location.assign(this.returnUrl());
    }, RETURN_DELAY_MS);
  }

  private focusFirstInvalid(): void {
    const first = document.querySelector<HTMLElement>('form .ng-invalid input, form input.ng-invalid');
    first?.focus();
  }

  private focusLater(target: () => ElementRef<HTMLElement> | undefined): void {
    setTimeout(() => target()?.nativeElement.focus());
  }
}
